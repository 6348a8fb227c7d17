import os

from django.core.wsgi import get_wsgi_application

from donutsite.requestbody import ChunkedBody

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "donutsite.settings")
application = ChunkedBody(get_wsgi_application())
