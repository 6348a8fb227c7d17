from django.contrib import admin, messages

from clients import auth
from clients.models import ApiClient
from donutsite.admin import EditedFieldsAdmin


@admin.register(ApiClient)
class ApiClientAdmin(EditedFieldsAdmin):
    """An edit writes only what its page changed (EditedFieldsAdmin): a rename from a page opened before
    someone revoked the key must not turn the key back on."""

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

    def has_delete_permission(self, request, obj=None):
        # Revoke with is_active instead: the client's sales must keep pointing at it.
        return False

    def save_new(self, request, obj):
        key = obj.set_new_key()
        obj.save()
        self.message_user(
            request,
            f"Copy this key now: {key} — only its hash is stored, so it cannot be shown again. "
            "The client sends it as: Authorization: Api-Key <key>",
            messages.SUCCESS,
        )
