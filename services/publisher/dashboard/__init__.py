"""German dashboard and the installable web app (Open Smart City app) with their templates and static files."""
