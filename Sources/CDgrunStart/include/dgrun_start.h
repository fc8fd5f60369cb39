#ifndef DGRUN_START_H
#define DGRUN_START_H
// Nothing to call: start.c only defines the Swift runtime's argv hook, for the executable's link.
#endif
