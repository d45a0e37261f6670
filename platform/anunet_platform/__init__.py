"""anunet_platform: ANU-Net on Ray (Data, Train, Tune), MLflow, and batch segmentation.

Lives in ``platform/anunet_platform``; ``platform/`` itself is a plain source folder and must
never become a package (it would shadow Python's standard ``platform`` module).
"""
