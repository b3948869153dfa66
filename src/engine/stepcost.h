/* stepcost.h - what a decode step costs, and the prompt budget from it.
 *
 * While streams generate, every step that also carries prompt tokens makes
 * them wait. The scheduler learns, as the model runs, what a step of
 * generating slots alone costs and what each prompt token adds, and lets a
 * prompt join the generating slots' steps only as many tokens at a time as
 * keep a step within a bound: `stall_us` or STEPCOST_SLOWDOWN pure decode
 * steps, whichever is longer (the Sarathi-Serve idea, with the budget
 * measured instead of configured). On a GPU a prompt token costs a sliver
 * of a decode step and the budget is the whole chunk; on a CPU it costs
 * about a twentieth of an 8-stream step, and a 512-token chunk would stall
 * every stream ~0.4 s a token. The floor of 8 steps keeps the extra steps
 * a prompt is spread over to about a seventh of its own compute time.
 */
#ifndef CORRAL_STEPCOST_H
#define CORRAL_STEPCOST_H

#define STEPCOST_SLOWDOWN 8   /* a step may take this many pure decode steps */
#define STEPCOST_MIN_TOKENS 64 /* fewer a step would make prompts crawl */

struct stepcost {
    double step_us;  /* a step of generating slots only (moving average); 0 = none seen */
    double token_us; /* each prompt token on top of it (moving average); 0 = none seen */
};

/* Learn from a step of n_gen generating slots and n_prompt prompt tokens that took us. */
void stepcost_learn(struct stepcost *c, int n_gen, int n_prompt, double us);

/* Prompt tokens a step may carry besides generating slots: at most chunk;
 * chunk while nothing has been measured yet or when stall_us <= 0. */
int stepcost_budget(const struct stepcost *c, double stall_us, int chunk);

#endif
