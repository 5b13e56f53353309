"""Run the workflow service: `python -m services.workflow`."""

from services.workflow.app import create_app
from services.workflow.settings import WorkflowSettings
from shared.runner import run_service

if __name__ == "__main__":
    run_service(create_app, WorkflowSettings())
