"""What inventory tells other apps, so that it never imports them (inventory must not import factory)."""

from django.dispatch import Signal

# A restock was opened and its transaction committed: its order should go to the factory. Sent with
# restock_id= and reason= (a Restock.Reason); the factory app hands the restock to its queue, the urgent
# one for Restock.URGENT_REASONS, and notes it (factory.services.restock_dispatch).
restock_opened = Signal()

# A sale took the last of a product whose open restock has not been sent to the factory yet (a routine
# one, queued behind the others): it is as urgent as a shortage's now. Sent after commit with restock_id=;
# the factory app sends it again on the urgent queue (factory.services.restock_hurry).
restock_sold_out = Signal()
