from services.common.server import serve
from services.frontend.app import create_app
from services.frontend.settings import FrontendSettings

settings = FrontendSettings()
serve(create_app(settings), settings.host, settings.port, settings.log_level)
