"""The tierflow command line, configuration and batch jobs."""
