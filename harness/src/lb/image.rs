//! The LB's container image, built locally FROM scratch (placeholder).
