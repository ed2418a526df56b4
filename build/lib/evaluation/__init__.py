"""The judge, metrics, records, tables, figures and REPORT.md."""
