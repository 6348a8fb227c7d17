from django.apps import AppConfig


class DonutsiteConfig(AppConfig):
    name = "donutsite"

    def ready(self):
        from donutsite import checks, login_throttle  # noqa: F401  (register checks and signal receivers)
        from donutsite.health import shutdown_hook_install_in_gunicorn_worker

        shutdown_hook_install_in_gunicorn_worker()  # /readyz answers 503 once this gunicorn worker got SIGTERM
