from django.contrib import admin, messages

from clients import auth
from clients.models import ApiClient
from donutsite.admin import EditedFieldsForm, ModelAdmin


@admin.register(ApiClient)
class ApiClientAdmin(ModelAdmin):
    list_display = ("name", "key_prefix", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("name", "key_prefix")
    fieldsets = [
        (
            None,
            {
                "fields": ("name", "is_active", "key_prefix", "created_at"),
                "description": "A key is generated when the client is added and shown once. Untick Active to "
                f"revoke it; running servers stop accepting it within {auth.CACHE_SECONDS:g} seconds.",
            },
        )
    ]
    readonly_fields = ("key_prefix", "created_at")
    form = EditedFieldsForm

    def has_delete_permission(self, request, obj=None):
        # Revoke with is_active instead: the client's sales must keep pointing at it.
        return False

    def save_model(self, request, obj, form, change):
        if change:
            # Only what this page changed: a rename from a page opened before someone revoked the key must
            # not turn the key back on.
            if form.changed_data:
                obj.save(update_fields=form.changed_data)
            return
        key = obj.set_new_key()
        obj.save()
        self.message_user(
            request,
            f"Copy this key now: {key} — only its hash is stored, so it cannot be shown again. "
            "The client sends it as: Authorization: Api-Key <key>",
            messages.SUCCESS,
        )
