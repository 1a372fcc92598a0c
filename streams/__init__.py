"""The faust application: a thin shell that runs ``tether.core`` over Kafka topics and tables."""
