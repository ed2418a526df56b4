def unit_report(run_records, all_records, grid):
    return f"{len(run_records)} records"
