"""Open-data KPI API: queries, Cell Key Method perturbation, JSON/CSV representations, conditional answers."""
