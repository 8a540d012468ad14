"""DuckDB views, stats, the flow visualizer, preview and reports."""
