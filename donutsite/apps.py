from django.apps import AppConfig


class DonutsiteConfig(AppConfig):
    name = "donutsite"

    def ready(self):
        from donutsite import checks  # noqa: F401  (registers the start-up checks)
