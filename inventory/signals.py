"""What inventory tells other apps, so that it never imports them (inventory must not import factory)."""

from django.dispatch import Signal

# A restock was opened and its transaction committed: its order should go to the factory. Sent with
# restock_id=, reason= (a Restock.Reason) and sold_out= (the transaction took the last of its product);
# the factory app hands the restock to its queue, the urgent one for Restock.URGENT_REASONS or a sold-out
# product, and notes it (factory.services.restock_dispatch).
restock_opened = Signal()

# A failed restock was reopened for a new need (services.restocks_open), sent inside the transaction that
# reopened it: the factory app gives its order row a fresh attempt budget in that same transaction, as a
# redrive does (factory.redrive.restock_run_afresh). Sent with restock_id=; restock_opened follows after
# commit, as for a new restock.
restock_reopened = Signal()

# Asked before a failed restock is reopened for a new need (services.restocks_open), with restock_id=: a
# receiver that answers False keeps it failed, and a new restock (a new reference) is opened instead. The
# factory app answers False when the factory refused the restock's last call's order (400, 409): nothing
# of ours is under that reference, and the same call would be refused again, for every need after it
# (factory.redrive.restock_order_refused).
restock_reopen_asked = Signal()

# A sale took the last of a product whose open restock, opened before that sale, has not been sent to the
# factory yet (a routine one, queued behind the others): it is as urgent as a shortage's now. One the sale
# opened itself is sent urgent at once instead (restock_opened's sold_out=). Sent after commit with restock_id=;
# the factory app sends it again on the urgent queue (factory.services.restock_hurry).
restock_sold_out = Signal()
