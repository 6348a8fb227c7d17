import getpass

from django.core.management.base import BaseCommand, CommandError

from donutsite.management import EX_TEMPFAIL
from factory.models import DeadLetter
from factory.redrive import Redrive, dead_letters_redrive


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
        "dead letter reopens its failed restock (pending, attempts reset); repeating is harmless. Exit status "
        f"{EX_TEMPFAIL} when the broker did not take one (it still waits: redrive it again)."
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
            dead_letters = list(DeadLetter.objects.unresolved().select_related("restock"))
        else:
            found = DeadLetter.objects.select_related("restock").in_bulk(ids)
            unknown = sorted(set(ids) - set(found))
            if unknown:
                raise CommandError(f"No dead letter with id {', '.join(map(str, unknown))}; nothing was sent.")
            dead_letters = list(found.values())
        # Each line describes the dead letter as it was before its redrive (the restock's status then).
        before = {dead_letter.pk: _describe(dead_letter) for dead_letter in dead_letters}

        def say(dead_letter, sent):
            self.stdout.write(f"{before[dead_letter.pk]}: {Redrive.outcome(sent, dry_run=dry_run)}")

        result = dead_letters_redrive(
            dead_letters, by=f"manage.py redrive ({_os_user()})", dry_run=dry_run, on_each=say
        )
        self.stdout.write(result.summary())
        if result.unsent:
            count, them = len(result.unsent), "them" if len(result.unsent) != 1 else "it"
            raise CommandError(
                f"{count} dead letter{'s' if count != 1 else ''} not sent, the broker did not take {them}: "
                f"redrive {them} again",
                returncode=EX_TEMPFAIL,
            )
