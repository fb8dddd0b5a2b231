"""The Docker Engine API server (`kobako system service`)."""

# the Engine API versions served; here, so that `kobako version` names them without loading the server
API_VERSION = "1.41"
MIN_API_VERSION = "1.24"
