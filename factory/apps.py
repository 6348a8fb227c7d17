from django.apps import AppConfig


def _restock_opened(sender, *, restock_id: int, **kwargs) -> None:
    from factory.services import restock_dispatch

    restock_dispatch(restock_id)


class FactoryConfig(AppConfig):
    name = "factory"

    def ready(self):
        from inventory.signals import restock_opened

        # inventory announces a committed restock; sending it to the factory is this app's job.
        restock_opened.connect(_restock_opened, dispatch_uid="factory.restock_dispatch")
