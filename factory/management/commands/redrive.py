import getpass

from django.core.management.base import BaseCommand, CommandError

from factory.models import DeadLetter
from factory.services import dead_letter_redrive


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry, as in some containers
        return "unknown user"


def _describe(dead_letter: DeadLetter) -> str:
    what = f"dead letter {dead_letter.pk}: {dead_letter.task_name}{tuple(dead_letter.args)!r}"
    if dead_letter.restock_id:
        what += f", restock {dead_letter.restock_id} ({dead_letter.restock.status})"
    return what


class Command(BaseCommand):
    help = (
        "Send dead letters' work back to its queue: the ids given, or --all unresolved ones. A restock "
        "dead letter reopens its failed restock (pending, attempts reset); repeating is harmless."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, metavar="ID", help="Dead letter ids.")
        parser.add_argument("--all", action="store_true", help="Every unresolved (never redriven) dead letter.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would be redriven; change nothing.")

    def handle(self, *args, **options):
        ids, every, dry_run = options["ids"], options["all"], options["dry_run"]
        if every == bool(ids):
            raise CommandError("Give dead letter ids, or --all for every unresolved one (not both).")
        if every:
            dead_letters = list(DeadLetter.objects.filter(redriven_at__isnull=True).select_related("restock"))
        else:
            found = DeadLetter.objects.select_related("restock").in_bulk(ids)
            unknown = sorted(set(ids) - set(found))
            if unknown:
                raise CommandError(f"No dead letter with id {', '.join(map(str, unknown))}; nothing was sent.")
            dead_letters = list(found.values())
        dead_letters.sort(key=lambda dead_letter: dead_letter.pk)

        by = f"manage.py redrive ({_os_user()})"
        sent = nothing = 0
        for dead_letter in dead_letters:
            before = _describe(dead_letter)
            # Each redrive commits on its own and sends its message after that commit.
            if dead_letter_redrive(dead_letter, by=by, dry_run=dry_run):
                sent += 1
                outcome = "would send again" if dry_run else "sent again"
            else:
                nothing += 1
                outcome = "nothing to do, the restock is no longer failed"
            self.stdout.write(f"{before}: {outcome}")

        if dry_run:
            self.stdout.write(f"dry run: {sent} would be sent again, {nothing} with nothing to do; nothing changed")
        else:
            self.stdout.write(f"{sent} sent again, {nothing} with nothing to do")
