"""What every admin page shares: a changelist whose query string cannot break it.

The admin lets a URL filter a changelist by any lookup on the model's own fields (`?created_at__year=`,
`?id__range=`), not only by the list filters it shows. Django turns a lookup it cannot apply into its
"invalid lookup" redirect (`?e=1`), but some are only found wrong when the query is written as SQL
(`__year=0` or `99999`: no such datetime; `__range=1`: no second bound), after that check: a 500. The
date hierarchy's own year has the same fault for years from 9999 (Django ticket #37357). And `__regex`
reached MariaDB, whose error for a bad pattern (`?sku__regex=(`) read as the database being down: a 503.
So every ModelAdmin here, Django's User and Group included, writes its changelist's SQL before running
it, and refuses regular expressions (nobody needs them in a URL; a pattern over the ledger is a full scan).

EditedFieldsAdmin (with its EditedFieldsForm) is for the change forms two ops may have open at once (products,
API clients, devices): a save writes only what its page changed.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db.models.constants import LOOKUP_SEP
from django.utils.functional import cached_property

REFUSED_LOOKUPS = {"regex", "iregex"}


class CheckedChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        try:
            queryset = super().get_queryset(request, exclude_parameters)
            queryset.query.get_compiler(queryset.db, elide_empty=False).as_sql()
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            raise IncorrectLookupParameters(exc) from exc
        return queryset


class ModelAdmin(admin.ModelAdmin):
    def get_changelist(self, request, **kwargs):
        return CheckedChangeList

    def lookup_allowed(self, lookup, value, request):
        if lookup.split(LOOKUP_SEP)[-1] in REFUSED_LOOKUPS:
            return False  # a 400 (DisallowedModelAdminLookup)
        return super().lookup_allowed(lookup, value, request)

    def response_action(self, request, queryset):
        try:
            queryset.filter(pk__in=request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))
        except (ValidationError, ValueError, TypeError):
            # Django's words for a post with nothing selected; None sends the changelist back to itself.
            self.message_user(
                request,
                "Items must be selected in order to perform actions on them. No items have been changed.",
                messages.WARNING,
            )
            return None
        return super().response_action(request, queryset)


class EditedFieldsForm(forms.ModelForm):
    """A change form whose changed_data is what this person changed on their page, so that saving it writes
    only that (EditedFieldsAdmin saves `changed_data` alone).

    Django compares the post with the database as it is when the post arrives. With two ops on one row (one
    takes a product off sale or revokes a key, the other, whose page was open before, renames it), the second
    save took the page's old "active" for a change of its own and put it back. So each field also sends the
    value its page showed (Django's show_hidden_initial), and is compared with that; a post without it (a
    script) is compared with the database, as before.

    Right for fields whose hidden initial is one input under the field's own name, as every field of the
    products', API clients' and devices' pages is. Not for others: a file field would count as changed on
    every save (its hidden initial is the file's name, which is no file), a split date and time sends two
    inputs (`initial-x_0`, `initial-x_1`) and one with several values none when empty, so those two would
    be compared with the database again. test_admin_edited_fields saves every such page untouched and
    finds nothing written."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.show_hidden_initial = True

    @cached_property
    def changed_data(self):
        return [name for name, bound in self._bound_items() if self._edited(bound)]

    def _edited(self, bound) -> bool:
        if bound.html_initial_name not in self.data:
            return bound.field.has_changed(bound.initial, bound.data)
        return bound._has_changed()  # against the value the page showed


class EditedFieldsAdmin(ModelAdmin):
    """A ModelAdmin whose change form writes only the fields this person edited (EditedFieldsForm), and
    nothing when they edited none: a full save would put back what another save, a sale or FCM changed
    since the page was opened. An admin says how its rows are written in save_new and save_edited (a
    product's through its service)."""

    form = EditedFieldsForm

    def save_model(self, request, obj, form, change):
        if not change:
            self.save_new(request, obj)
        elif form.changed_data:
            self.save_edited(request, obj, form.changed_data)

    def save_new(self, request, obj) -> None:
        """Write a row added on the add page: all of it, nobody else has it yet."""
        obj.save()

    def save_edited(self, request, obj, fields: list[str]) -> None:
        """Write `fields` of the row, the ones this person edited (never empty)."""
        obj.save(update_fields=fields)


# Django's own admins for users and groups, with the same changelist.
for model, model_admin in ((User, UserAdmin), (Group, GroupAdmin)):
    admin.site.unregister(model)
    admin.site.register(model, type(model_admin.__name__, (ModelAdmin, model_admin), {}))
