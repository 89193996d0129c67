"""The job: command-line options, the graph wiring the transforms/ stages, and the entry point."""
