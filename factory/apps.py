from django.apps import AppConfig


def _restock_opened(sender, *, restock_id: int, reason: str = "", sold_out: bool = False, **kwargs) -> None:
    from factory.services import restock_dispatch
    from inventory.models import Restock

    restock_dispatch(restock_id, shortage=reason in Restock.URGENT_REASONS or sold_out)


def _restock_reopened(sender, *, restock_id: int, **kwargs) -> None:
    from factory.redrive import restock_run_afresh

    restock_run_afresh(restock_id)


def _restock_reopen_asked(sender, *, restock_id: int, **kwargs) -> bool:
    from factory.redrive import restock_order_refused

    return not restock_order_refused(restock_id)


def _restock_sold_out(sender, *, restock_id: int, **kwargs) -> None:
    from factory.services import restock_hurry

    restock_hurry(restock_id)


class FactoryConfig(AppConfig):
    name = "factory"

    def ready(self):
        from factory import checks  # noqa: F401 - registers the deploy check
        from inventory.signals import restock_opened, restock_reopen_asked, restock_reopened, restock_sold_out

        # inventory announces a committed restock; sending it to the factory is this app's job.
        restock_opened.connect(_restock_opened, dispatch_uid="factory.restock_dispatch")
        restock_reopened.connect(_restock_reopened, dispatch_uid="factory.restock_run_afresh")
        restock_reopen_asked.connect(_restock_reopen_asked, dispatch_uid="factory.restock_order_refused")
        restock_sold_out.connect(_restock_sold_out, dispatch_uid="factory.restock_hurry")
