"""Helpers of Heirflow's demo DAGs (model_select): the model and the key-value ring client.

Lives in the DAG folder (on sys.path for every Airflow process); .airflowignore keeps the
dag-processor from parsing it as DAG files.
"""
