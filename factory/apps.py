from django.apps import AppConfig


def _restock_opened(sender, *, restock_id: int, reason: str = "", **kwargs) -> None:
    from factory.services import restock_dispatch
    from inventory.models import Restock

    restock_dispatch(restock_id, shortage=reason == Restock.Reason.SHORTAGE)


class FactoryConfig(AppConfig):
    name = "factory"

    def ready(self):
        from inventory.signals import restock_opened

        # inventory announces a committed restock; sending it to the factory is this app's job.
        restock_opened.connect(_restock_opened, dispatch_uid="factory.restock_dispatch")
