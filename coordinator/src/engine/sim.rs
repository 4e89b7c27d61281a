//! FarmSim placeholder
