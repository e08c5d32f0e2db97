"""The API's resources, one class per area, each bound to a client's ``Requester``."""

from ._tasks import Tasks
from ._uploads import Uploads

__all__ = ["Tasks", "Uploads"]
