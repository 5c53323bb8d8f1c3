"""Serving: the Seldon model class, the local gateway, the local-stack launcher and the
SeldonDeployment renderer.

``daic.serving.model`` runs inside ``.venv-serving`` (seldon-core 1.18, Flask 2, protobuf 3) and
imports only what that environment has; everything else here runs in the main environment and
never imports seldon-core. Import from the submodules; this package stays import-light.
"""
