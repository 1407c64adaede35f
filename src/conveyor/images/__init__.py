"""Container images for steps: `DockerSettings` (settings key "docker") and the content-hashed image builder.

Importing this package is cheap: `settings.py` needs only pydantic, and `build.py` (which talks to the Docker
Engine API through the docker SDK) is imported only when an image is built.
"""
