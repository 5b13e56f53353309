"""DCAT-AP.de catalog: dataset descriptors from providers, RDF graphs, paging, the `/catalog` routes."""
