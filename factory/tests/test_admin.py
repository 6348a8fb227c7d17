"""The factory's admin as ops staff use it: finding dead letters, reading why they died, redriving them,
and seeing every call to the factory on its restock."""

import re
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from factory.admin import FactoryRestockAdmin
from factory.models import DeadLetter, FactoryAttempt
from inventory.admin import RestockAdmin
from inventory.errors import OutOfStock
from inventory.models import Restock
from inventory.services import SaleItem, sale_create
from testsupport.admin import shown_messages
from testsupport.data import make_api_client, make_dead_letter, make_failed_restock
from testsupport.queues import queued

DEAD_LETTERS = reverse("admin:factory_deadletter_changelist")
ATTEMPTS = reverse("admin:factory_factoryattempt_changelist")


def change_url(dead_letter):
    return reverse("admin:factory_deadletter_change", args=[dead_letter.pk])


def redrive_url(dead_letter):
    return reverse("admin:factory_deadletter_redrive", args=[dead_letter.pk])


def listed(response) -> list[int]:
    return sorted(obj.pk for obj in response.context["cl"].result_list)


def add_attempts(restock):
    FactoryAttempt.objects.create(
        restock=restock, number=1, outcome="transient", status_code=503, latency_ms=1200, error="503 <b>busy</b>"
    )
    FactoryAttempt.objects.create(
        restock=restock, number=2, outcome="permanent", status_code=409, latency_ms=42, error="409 Conflict"
    )


def call_rows(html) -> list[tuple]:
    """The rows of the page's table of factory calls: number, outcome, status code, latency, error."""
    table = re.search(r'<table class="factory-attempts">(.*?)</table>', html, re.S).group(1)
    return re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", table)


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["restock", "dead letter"])
def test_a_restock_with_thousands_of_calls_shows_its_latest_and_links_the_rest(admin_client, queues, page):
    # A factory rate limiting a restock for hours (a 429 spends no attempt) makes thousands of calls: the pages
    # about it must stay small, not render every one.
    dead_letter = make_dead_letter()
    restock_id = dead_letter.restock_id
    FactoryAttempt.objects.bulk_create(
        FactoryAttempt(restock_id=restock_id, number=n, outcome="rate_limited", status_code=429, latency_ms=5)
        for n in range(1, 3001)
    )
    url = reverse("admin:inventory_restock_change", args=[restock_id]) if page == "restock" else change_url(dead_letter)

    html = admin_client.get(url).content.decode()

    assert [int(row[0]) for row in call_rows(html)] == list(range(2951, 3001))
    assert f'2950 earlier calls are not shown: <a href="{ATTEMPTS}?q={restock_id}">all 3000</a>' in html


@pytest.mark.django_db
def test_a_restock_with_exactly_as_many_calls_as_shown_has_none_hidden(admin_client, queues):
    dead_letter = make_dead_letter()
    FactoryAttempt.objects.bulk_create(
        FactoryAttempt(restock_id=dead_letter.restock_id, number=n, outcome="transient", latency_ms=5)
        for n in range(1, 51)
    )

    html = admin_client.get(change_url(dead_letter)).content.decode()

    assert len(call_rows(html)) == 50 and "not shown" not in html


@pytest.fixture
def viewer(client, db):
    """Staff who may look at dead letters but not redrive them."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_deadletter", "view_factoryattempt", "view_restock"])
    )
    client.force_login(user)
    return client


# The dead-letter list


@pytest.mark.django_db
def test_the_dead_letter_list_shows_each_one_with_its_restock(admin_client, queues):
    dead_letter = make_dead_letter()

    response = admin_client.get(DEAD_LETTERS)

    assert response.status_code == 200
    html = response.content.decode()
    restock_url = reverse("admin:inventory_restock_change", args=[dead_letter.restock_id])
    sku = Restock.objects.get(pk=dead_letter.restock_id).product.sku
    assert f'<a href="{restock_url}">restock {dead_letter.restock_id} of {sku} (failed)</a>' in html
    assert "factory.client.FactoryRejected" in html
    assert "409 Conflict: &lt;reference&gt;" in html, "the message is shown, escaped"
    assert "<reference>" not in html


@pytest.mark.django_db
def test_the_dead_letter_filters(admin_client, queues):
    fresh = make_dead_letter()
    yesterday = make_dead_letter(failed_days_ago=0.5)
    old_resolved = make_dead_letter(failed_days_ago=3, redriven_days_ago=2)
    poll = make_dead_letter(restock_status="placed", task="factory.restock_poll")

    def filtered(**params):
        response = admin_client.get(DEAD_LETTERS, params)
        assert response.status_code == 200
        return listed(response)

    assert filtered(age="hour") == sorted([fresh.pk, poll.pk])
    assert filtered(age="day") == sorted([fresh.pk, yesterday.pk, poll.pk])
    assert filtered(age="older") == [old_resolved.pk]
    assert filtered(resolved="yes") == [old_resolved.pk]
    assert filtered(resolved="no") == sorted([fresh.pk, yesterday.pk, poll.pk])
    assert filtered(task_name__exact="factory.restock_poll") == [poll.pk]
    assert filtered(exception_type__exact="factory.client.FactoryRejected") == sorted(
        [fresh.pk, yesterday.pk, old_resolved.pk, poll.pk]
    )
    assert filtered(exception_type__exact="builtins.ValueError") == []


@pytest.mark.django_db
def test_dead_letters_are_found_by_task_id_correlation_id_or_restock_id(admin_client, queues):
    one, other = make_dead_letter(), make_dead_letter()

    def found(term):
        response = admin_client.get(DEAD_LETTERS, {"q": term})
        assert response.status_code == 200
        return listed(response)

    assert found(one.task_id) == [one.pk]
    assert found(other.correlation_id) == [other.pk]
    assert found(str(one.restock_id)) == [one.pk]
    assert found("no-such-thing") == []


@pytest.mark.django_db
def test_dead_letters_are_found_by_the_sku_their_alert_names(admin_client, queues):
    # "Dead letter: GLAZED (factory.restock_place gave up)": after an outage dozens wait, a few per SKU,
    # and ops look for the one the page named without opening each.
    from testsupport.data import make_failed_restock, make_product

    glazed = make_product("GLAZED", on_hand=0)
    first, second = make_failed_restock(glazed)[1], make_failed_restock(glazed)[1]
    make_failed_restock(make_product("VIRAL", on_hand=0))

    response = admin_client.get(DEAD_LETTERS, {"q": "GLAZED"})

    assert listed(response) == [first.pk, second.pk]
    html = response.content.decode()
    assert f">restock {first.restock_id} of GLAZED (failed)</a>" in html
    assert "VIRAL" not in html


# One dead letter


@pytest.mark.django_db
def test_the_dead_letter_page_shows_the_traceback_and_the_factory_calls(admin_client, queues):
    dead_letter = make_dead_letter()
    add_attempts(Restock.objects.get(pk=dead_letter.restock_id))

    response = admin_client.get(change_url(dead_letter))

    assert response.status_code == 200
    html = response.content.decode()
    traceback = re.search(r"<pre[^>]*>(.*?)</pre>", html, re.S).group(1)
    assert "Traceback (most recent call last)" in traceback and "in _place_order" in traceback
    assert "FactoryRejected: 409 Conflict: &lt;reference&gt;" in traceback
    assert f"<code>[{dead_letter.restock_id}]</code>" in html, "the task's args"
    assert call_rows(html) == [
        ("1", "Transient", "503", "1200", "503 &lt;b&gt;busy&lt;/b&gt;"),
        ("2", "Permanent", "409", "42", "409 Conflict"),
    ]
    assert "<b>busy</b>" not in html
    assert redrive_url(dead_letter) in html, "the Redrive button"


@pytest.mark.django_db
def test_a_dead_letter_cannot_be_added_edited_or_deleted_here(admin_client, queues):
    dead_letter = make_dead_letter()

    assert admin_client.get(reverse("admin:factory_deadletter_add")).status_code == 403
    assert admin_client.get(reverse("admin:factory_deadletter_delete", args=[dead_letter.pk])).status_code == 403
    page = admin_client.get(change_url(dead_letter)).content.decode()
    assert 'name="_save"' not in page, "read-only"
    assert 'value="delete_selected"' not in admin_client.get(DEAD_LETTERS).content.decode()
    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()


# Redrive


@pytest.mark.django_db(transaction=True)
def test_the_redrive_action_reopens_restocks_and_queues_them(admin_client, queues):
    waiting = make_dead_letter()
    settled = make_dead_letter(restock_status="cancelled")

    response = admin_client.post(
        DEAD_LETTERS, {"action": "redrive", "_selected_action": [waiting.pk, settled.pk]}, follow=True
    )

    assert response.status_code == 200
    assert shown_messages(response) == ["1 dead letter sent again; 1 had nothing to do (redriven or settled already)."]
    restock = Restock.objects.get(pk=waiting.restock_id)
    assert restock.status == "pending"
    assert (restock.factory_order.attempt_count, restock.factory_order.attempts_this_run) == (1, 0)
    assert Restock.objects.get(pk=settled.restock_id).status == "cancelled"
    assert queued("factory") == [("factory.restock_place", [restock.pk])]
    dead_letter = DeadLetter.objects.get(pk=waiting.pk)
    assert (dead_letter.redriven_by, dead_letter.redrive_count) == ("admin", 1)


@pytest.mark.django_db(transaction=True)
def test_the_redrive_button_sends_one_dead_letter_again(admin_client, queues):
    dead_letter = make_dead_letter()

    response = admin_client.post(redrive_url(dead_letter), follow=True)

    assert response.redirect_chain[-1][0] == change_url(dead_letter)
    assert shown_messages(response) == [f"Dead letter {dead_letter.pk}: sent again."]
    assert Restock.objects.get(pk=dead_letter.restock_id).status == "pending"
    assert queued("factory") == [("factory.restock_place", [dead_letter.restock_id])]
    assert "Redrive again" in response.content.decode()

    again = admin_client.post(redrive_url(dead_letter), follow=True)

    assert shown_messages(again) == [f"Dead letter {dead_letter.pk}: nothing to do (redriven or settled already)."]
    assert len(queued("factory")) == 1


@pytest.mark.django_db(transaction=True)
def test_redriving_a_dead_letter_whose_restock_a_newer_one_superseded_says_so_and_sends_nothing(admin_client, queues):
    dead_letter, waiting = make_dead_letter(), make_dead_letter()
    failed = Restock.objects.get(pk=dead_letter.restock_id)
    newer = Restock.objects.create(product_id=failed.product_id, quantity=50, reason="shortage", status="fulfilled")
    outcome = f"superseded by restock {newer.pk} (fulfilled) of the same product: settled, nothing sent"

    one = admin_client.post(redrive_url(dead_letter), follow=True)
    both = admin_client.post(
        DEAD_LETTERS, {"action": "redrive", "_selected_action": [dead_letter.pk, waiting.pk]}, follow=True
    )

    assert (one.status_code, both.status_code) == (200, 200)
    assert shown_messages(one) == [f"Dead letter {dead_letter.pk}: {outcome}."]
    assert shown_messages(both) == [
        "1 dead letter sent again; 0 had nothing to do (redriven or settled already). "
        "1 superseded by a newer restock of its product: settled, nothing sent."
    ], "a second redrive says what the first one did"
    assert Restock.objects.get(pk=failed.pk).status == "failed"
    assert queued("factory") == [("factory.restock_place", [waiting.restock_id])], "only the other one"
    history = LogEntry.objects.filter(object_id=str(dead_letter.pk)).order_by("pk")
    assert [entry.change_message for entry in history][0] == f"Redrive from the admin: {outcome}."


@pytest.mark.django_db(transaction=True)
def test_redriving_a_dead_letter_whose_restock_a_new_need_reopened_says_it_went_again_already(admin_client, queues):
    # A shortage reopened the failed restock: it is pending, on its way to the factory again, and its dead
    # letter stays open until the factory takes the order. A redrive sends nothing more, and says so: it
    # is neither redriven nor settled.
    restock, dead_letter = make_failed_restock()
    client, _ = make_api_client()
    with pytest.raises(OutOfStock):
        sale_create(client=client, items=[SaleItem(restock.product.sku, 1)])
    outcome = "already sent again (a new need reopened its restock): left open until the factory takes it"

    one = admin_client.post(redrive_url(dead_letter), follow=True)
    selected = admin_client.post(DEAD_LETTERS, {"action": "redrive", "_selected_action": [dead_letter.pk]}, follow=True)

    assert shown_messages(one) == [f"Dead letter {dead_letter.pk}: {outcome}."]
    assert shown_messages(selected) == [
        f"0 dead letters sent again; 0 had nothing to do (redriven or settled already). 1 {outcome}."
    ]
    assert not DeadLetter.objects.get(pk=dead_letter.pk).is_resolved
    assert Restock.objects.get(pk=restock.pk).status == "pending"
    assert queued("factory_urgent") == [("factory.restock_place", [restock.pk])], "sent once, by the shortage"
    history = LogEntry.objects.filter(object_id=str(dead_letter.pk)).order_by("pk")
    assert [entry.change_message for entry in history] == [f"Redrive from the admin: {outcome}."] * 2


@pytest.mark.django_db(transaction=True)
def test_the_redrive_button_needs_a_post(admin_client, queues):
    dead_letter = make_dead_letter()

    assert admin_client.get(redrive_url(dead_letter)).status_code == 405
    assert Restock.objects.get(pk=dead_letter.restock_id).status == "failed"
    assert queued("factory") == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("object_id", ["abc", "\N{SUPERSCRIPT TWO}", "99999999999999999999999"])
def test_redriving_a_dead_letter_that_cannot_exist_is_not_found(admin_client, queues, object_id):
    dead_letter = make_dead_letter()

    response = admin_client.post(reverse("admin:factory_deadletter_redrive", args=[object_id]))

    assert response.status_code == 404
    assert Restock.objects.get(pk=dead_letter.restock_id).status == "failed"
    assert queued("factory") == []


@pytest.mark.django_db(transaction=True)
def test_staff_who_may_only_look_cannot_redrive(viewer, queues):
    dead_letter = make_dead_letter()

    assert viewer.get(DEAD_LETTERS).status_code == 200
    page = viewer.get(change_url(dead_letter))
    assert page.status_code == 200 and "Traceback" in page.content.decode()
    assert redrive_url(dead_letter) not in page.content.decode()
    assert viewer.post(redrive_url(dead_letter)).status_code == 403
    viewer.post(DEAD_LETTERS, {"action": "redrive", "_selected_action": [dead_letter.pk]})

    assert Restock.objects.get(pk=dead_letter.restock_id).status == "failed"
    assert queued("factory") == []


# Factory calls


@pytest.mark.django_db
def test_the_factory_call_list_filters_and_searches(admin_client, queues):
    first, second = make_dead_letter(), make_dead_letter()
    add_attempts(Restock.objects.get(pk=first.restock_id))
    FactoryAttempt.objects.create(
        restock_id=second.restock_id, number=1, outcome="accepted", status_code=202, latency_ms=9
    )

    def shown(**params):
        response = admin_client.get(ATTEMPTS, params)
        assert response.status_code == 200
        return sorted((a.restock_id, a.number) for a in response.context["cl"].result_list)

    assert len(shown()) == 3
    assert shown(outcome__exact="permanent") == [(first.restock_id, 2)]
    assert shown(status_code__exact="202") == [(second.restock_id, 1)]
    assert shown(q=str(first.restock_id)) == [(first.restock_id, 1), (first.restock_id, 2)]
    assert admin_client.get(reverse("admin:factory_factoryattempt_add")).status_code == 403


# Restocks


def test_the_restock_admin_is_inventorys_plus_the_factory_calls():
    registered = admin.site._registry[Restock]
    assert isinstance(registered, FactoryRestockAdmin) and isinstance(registered, RestockAdmin)
    # inventory's columns first, then the factory order's (inventory cannot name them: it does not import factory)
    assert registered.list_display[: len(RestockAdmin.list_display)] == RestockAdmin.list_display
    assert registered.list_display[len(RestockAdmin.list_display) :] == (
        "factory_order_id",
        "dispatched_at",
        "attempts",
    )
    assert registered.list_filter == RestockAdmin.list_filter


@pytest.mark.django_db
def test_the_restock_page_shows_its_factory_calls_and_dead_letters(admin_client, queues):
    dead_letter = make_dead_letter()
    restock = Restock.objects.get(pk=dead_letter.restock_id)
    add_attempts(restock)

    response = admin_client.get(reverse("admin:inventory_restock_change", args=[restock.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Calls to the factory" in html
    assert call_rows(html) == [
        ("1", "Transient", "503", "1200", "503 &lt;b&gt;busy&lt;/b&gt;"),
        ("2", "Permanent", "409", "42", "409 Conflict"),
    ]
    assert "<b>busy</b>" not in html
    assert f'{DEAD_LETTERS}?restock__id__exact={restock.pk}">1 dead letter</a>' in html
    assert "open_product" not in html, "inventory's admin still hides its helper column"
    assert "attempts-TOTAL_FORMS" not in html, "the calls are a record: nothing to add, change or delete"

    dead_letters = admin_client.get(DEAD_LETTERS, {"restock__id__exact": restock.pk})
    assert listed(dead_letters) == [dead_letter.pk]


@pytest.mark.django_db
def test_the_restock_list_still_works(admin_client, queues):
    dead_letter = make_dead_letter()

    response = admin_client.get(reverse("admin:inventory_restock_changelist"), {"status": "failed"})

    assert response.status_code == 200
    assert listed(response) == [dead_letter.restock_id]


@pytest.mark.django_db
def test_the_dead_letter_age_filter_boundaries(admin_client, queues):
    two_hours = make_dead_letter()
    DeadLetter.objects.filter(pk=two_hours.pk).update(last_failed_at=timezone.now() - timedelta(hours=2))

    assert listed(admin_client.get(DEAD_LETTERS, {"age": "hour"})) == []
    assert listed(admin_client.get(DEAD_LETTERS, {"age": "day"})) == [two_hours.pk]
    assert listed(admin_client.get(DEAD_LETTERS, {"age": "older"})) == []
