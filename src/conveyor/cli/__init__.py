"""The `conveyor` command line: read and steer stacks, components and runs; no business logic lives here."""
