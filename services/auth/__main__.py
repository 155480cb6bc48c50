from otel import Service, setup_tracing
from services.auth.app import create_app
from services.auth.settings import AuthSettings
from services.common.server import serve
from services.common.settings import load_settings

settings = load_settings(AuthSettings)
setup_tracing(Service.AUTH)
serve(create_app(settings), settings)
