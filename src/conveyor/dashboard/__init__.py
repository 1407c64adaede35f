"""`conveyor dashboard`: the web view of every run (pages, live updates, stop and resume) and `conveyor run report`.

Nothing is imported here: the web stack (Starlette, uvicorn, Jinja2; `pip install 'conveyor[dashboard]'`) loads
only when the dashboard starts or a report is written, so `import conveyor` and `conveyor --help` stay fast."""

__all__: list[str] = []
