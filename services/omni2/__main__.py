from otel import Service, setup_tracing
from services.common.server import serve
from services.common.settings import load_settings
from services.omni2.app import create_app
from services.omni2.settings import Omni2Settings

settings = load_settings(Omni2Settings)
setup_tracing(Service.OMNI2)
serve(create_app(settings), settings)
