"""Sources, inventory, enrichment, aggregation and the Parquet store."""
