"""An API URL that matches no route answers like every other API error (found by test_schema_fuzz)."""

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/sales/abc/", "/api/v1/products/A/B/", "/api/v1/nothing-here/"])
def test_an_api_url_that_matches_no_route_answers_the_json_error_shape(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "message": "Not found."}


def test_a_url_outside_the_api_keeps_the_html_404(client):
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_paths_are_json_404s_also_under_debug(client, settings, debug):
    settings.DEBUG = debug

    response = client.get("/api/v1/nothing-here/")

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "message": "Not found."}


@pytest.mark.parametrize("debug", [False, True])
def test_a_post_without_the_trailing_slash_reaches_the_view_also_under_debug(client_app, settings, debug):
    # make run (DEBUG) raised APPEND_SLASH's RuntimeError, an HTML 500; production answered a 301.
    settings.DEBUG = debug

    response = client_app.post("/api/v1/sales", {"items": []}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


def test_a_get_without_the_trailing_slash_is_served_too(client):
    response = client.get("/api/v1/products")

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_a_chunked_body_a_server_cannot_dechunk_is_a_411_not_an_empty_body():
    """runserver (make run) hands Django chunked bytes without a length; gunicorn de-chunks (test_hostile)."""
    import io
    import json

    from django.core.wsgi import get_wsgi_application

    from donutsite.requestbody import ChunkedBody

    answers = []
    app = ChunkedBody(get_wsgi_application())
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/sales/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b'2c\r\n{"items": [{"sku": "GLAZED", "quantity": 1}]}\r\n0\r\n\r\n'),
        "wsgi.errors": io.StringIO(),
        "HTTP_TRANSFER_ENCODING": "chunked",
        "CONTENT_TYPE": "application/json",
    }

    body = b"".join(app(environ, lambda status, headers: answers.append(status)))

    assert answers == ["411 Length Required"]
    assert json.loads(body)["code"] == "length_required"
