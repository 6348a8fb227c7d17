"""What inventory tells other apps, so that it never imports them (inventory must not import factory)."""

from django.dispatch import Signal

# A restock was opened and its transaction committed: its order should go to the factory. Sent with
# restock_id= and reason= (a Restock.Reason); the factory app hands the restock to its queue, a
# shortage's to the urgent one, and notes it (factory.services.restock_dispatch).
restock_opened = Signal()
