//! Endpoints and deployments: a flow version served as a shared, authenticated endpoint.
//!
//! - `/api/v1/endpoints…` (this module): endpoints (keys shown once, kept as sha256), their
//!   deployments (a flow version, how many instances, scaling, sampling), the traffic split,
//!   and each request's record and trace, with a dashboard's numbers.
//! - `POST /endpoints/{name}/score` (`score`): promptflow's serving contract, authenticated by
//!   an endpoint key or a user token with `endpoints/score`.
//! - `supervise` (`serving`): keeps every deployment's instances (sealed sessions) running,
//!   replaces dead ones, moves a deployment to a new flow version without downtime, follows the
//!   load between `min` and `max`, and builds the table `score` routes by.

mod api;
mod score;
mod serving;

pub(crate) use api::may_deploy;
pub use api::routes;
#[cfg(test)]
pub(crate) use serving::route_undeployed;
#[cfg(test)]
pub(crate) use serving::{route_stored, FlowFacts};
pub use serving::{supervise, Serving};
