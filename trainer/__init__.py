"""The trainer process: simulates or reads P-CSCF traffic, trains and exports the encoder, publishes it."""
