from django import template

from ops.dashboard import VIEW_PERMISSIONS

register = template.Library()


@register.filter
def may_open_dashboard(user) -> bool:
    """The dashboard's own test (every view permission it needs), so the admin index links it only for
    staff it will not refuse."""
    return user.has_perms(VIEW_PERMISSIONS)
