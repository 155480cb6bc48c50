from otel import Service, setup_tracing
from services.common.server import serve
from services.omni2.app import create_app
from services.omni2.settings import Omni2Settings

settings = Omni2Settings()
setup_tracing(Service.OMNI2)
serve(create_app(settings), settings.host, settings.port, settings.log_level)
