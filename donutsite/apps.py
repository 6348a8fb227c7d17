from django.apps import AppConfig


class DonutsiteConfig(AppConfig):
    name = "donutsite"

    def ready(self):
        from donutsite import checks, login_throttle  # noqa: F401  (register checks and signal receivers)
