pub mod action;
pub mod verify;
