from otel.names import Service
from otel.setup import setup_tracing
from services.common.server import serve
from services.common.settings import load_settings
from services.frontend.app import create_app
from services.frontend.settings import FrontendSettings

setup_tracing(Service.FRONTEND)
settings = load_settings(FrontendSettings)
serve(create_app(settings), settings)
