/*
 * kvllm sim calibrate: this CPU's rates for `kvllm sim --device cpu`
 * (docs/sim.md, "This CPU"). Returns the exit code.
 */
#ifndef KVL_CLI_SIM_CALIB_H
#define KVL_CLI_SIM_CALIB_H

int kvl_cli_sim_calibrate(int argc, char **argv);

#endif
