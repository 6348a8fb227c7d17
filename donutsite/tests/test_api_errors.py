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
