package delivery

// RampStep exposes rampStep to the external tests.
const RampStep = rampStep
