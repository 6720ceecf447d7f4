"""Reporting: reading run dirs and records, Pareto fronts with the seeds' noise, tables, plots,
records and README blocks, and the registry of reported numbers (reported.yaml). Imports no other room."""
