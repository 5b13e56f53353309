"""Names vulture cannot see being used: each one is called or read by a framework, named with it below.

Decorated entry points (FastAPI routes, typer commands, pydantic validators, pytest fixtures) are recognised by
`ignore_decorators` in pyproject.toml and are not listed here. Add a name only with the framework that uses it.
"""

# pydantic: the model's configuration, read by pydantic's metaclass
_.model_config

# pydantic + FastAPI: fields of API responses, event contracts and rejected-record envelopes; validated and
# serialized by pydantic (and part of the published JSON/AsyncAPI schemas), never read as Python attributes
_.from_  # services/publisher/kpis/schemas.py (alias "from")
_.perturbation  # services/publisher/kpis/schemas.py
_.total_items  # services/publisher/kpis/schemas.py
_.suppressed  # services/publisher/kpis/schemas.py (always false, kept for compatibility)
_.hessen_suppressed  # services/publisher/kpis/schemas.py
_.size_class_suppressed  # services/publisher/kpis/schemas.py
_.hessen_members  # services/publisher/kpis/schemas.py
_.instance  # services/publisher/kpis/schemas.py (RFC 9457 problem details)
_.invalid_params  # services/publisher/kpis/schemas.py (RFC 9457 problem details)
_.completed_at  # services/workflow/schemas.py
_.current_step  # services/workflow/schemas.py
_.current_step_title  # services/workflow/schemas.py
_.step_entered_at  # services/workflow/schemas.py
_.last_error  # services/workflow/schemas.py
_.next_timer  # services/workflow/schemas.py
_.open_task  # services/workflow/schemas.py
_.opened_at  # services/workflow/schemas.py
_.closed_at  # services/workflow/schemas.py
_.iss  # services/workflow/schemas.py (FIT-Connect callback claim)
_.txn  # services/workflow/schemas.py (FIT-Connect callback claim)
_.application_event_id  # services/workflow/schemas.py
_.application_event_type  # services/workflow/schemas.py
_.definition_version  # shared/events/workflow.py, services/workflow/schemas.py
_.fee_cents  # shared/events/application.py
_.step_name  # shared/events/usage.py
_.value_bytes  # shared/rejections.py
_.truncated  # shared/rejections.py

# Jinja2: view-model fields read only by the dashboard templates (services/publisher/dashboard/templates/)
_.category_label
_.download_label
_.has_data

# lark: Transformer methods, called by the name of the grammar rule (services/publisher/portal/solr.py)
_.value_or
_.value_and
_.negation
_.match_all
_.word
_.any_value
_.open_bound
_.fielded

# CKAN Action API: actions dispatched by name, `getattr(ckan, action)` (services/publisher/portal/api.py)
_.current_package_list_with_resources

# aiokafka: ConsumerRebalanceListener callbacks (services/aggregator/handlers.py)
_.on_partitions_revoked
_.on_partitions_assigned

# aiokafka: the fetcher's MemoryRecords interface, implemented by shared/kafka_records.py
_.size_in_bytes
_.has_next
_.next_batch

# logging: LogRecord attribute read by the formatters (shared/observability.py)
_.levelname

# Python: asynchronous context manager protocol, `__aexit__(exc_type, exc, tb)` (shared/client.py)
_.tb

# pytest: hook and module-level marks (tests/)
_.pytest_collection_modifyitems
_.pytestmark

# http.server: BaseHTTPRequestHandler methods of the test doubles (tests/integration/)
_.log_message
_.do_PUT
