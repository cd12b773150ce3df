"""pullsecret-injector: inject the in-scope registry imagePullSecrets each pod's images need."""

__version__ = "0.1.0"
