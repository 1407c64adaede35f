"""`DockerSettings` for the image builder; the model lives in `conveyor.config.docker_settings` (settings are
config, the bottom layer) and is importable from here too, where the flavors and user code import it from."""

from conveyor.config.docker_settings import DEFAULT_REPOSITORY, SETTINGS_KEY, DockerSettings, default_parent_image

__all__ = ["DEFAULT_REPOSITORY", "SETTINGS_KEY", "DockerSettings", "default_parent_image"]
