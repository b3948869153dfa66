/* stepcost.c - what a decode step costs, and the prompt budget from it. */
#include "engine/stepcost.h"

/* Weights of the newest step in the averages. A prompt's later chunks cost
 * more than its first ones (attention over a deeper context: +50% a token
 * at depth 1024 on the 134M model), so the token cost follows fast. */
#define STEPCOST_STEP_WEIGHT 0.125
#define STEPCOST_TOKEN_WEIGHT 0.5
#define STEPCOST_MIN_SAMPLE 32    /* prompt tokens a step needs to teach their cost */

static double stepcost__avg(double avg, double x, double w) {
    return avg > 0 ? avg + w * (x - avg) : x;
}

void stepcost_learn(struct stepcost *c, int n_gen, int n_prompt, double us) {
    if (us <= 0) return;
    if (n_prompt == 0) {
        if (n_gen > 0) c->step_us = stepcost__avg(c->step_us, us, STEPCOST_STEP_WEIGHT);
        return;
    }
    if (n_prompt < STEPCOST_MIN_SAMPLE) return; /* the fixed part of the step would dominate */
    if (n_gen > 0 && c->step_us <= 0) return;   /* cannot split the cost yet */
    double per = (us - (n_gen > 0 ? c->step_us : 0)) / n_prompt;
    if (per > 0) c->token_us = stepcost__avg(c->token_us, per, STEPCOST_TOKEN_WEIGHT);
}

int stepcost_budget(const struct stepcost *c, double stall_us, int chunk) {
    if (stall_us <= 0 || c->step_us <= 0 || c->token_us <= 0) return chunk;
    double cap = c->step_us * STEPCOST_SLOWDOWN;
    if (cap < stall_us) cap = stall_us;
    double b = (cap - c->step_us) / c->token_us;
    int floor = STEPCOST_MIN_TOKENS < chunk ? STEPCOST_MIN_TOKENS : chunk;
    if (b < floor) return floor;
    return b < chunk ? (int)b : chunk;
}
