// Model flavors (Melious): a suffix that asks for a way of serving a model, not another model.

/** Melious's flavor suffix: a model named `glm-4.7:batch` may have a route of its own (a pattern such as `*:batch`). */
export const FLAVOR_SUFFIX = ':batch';

/** The model without its flavor suffix, whose route serves it when no route names the flavored name. */
export function withoutFlavor(model: string): string {
  return model.endsWith(FLAVOR_SUFFIX) && model.length > FLAVOR_SUFFIX.length ? model.slice(0, -FLAVOR_SUFFIX.length) : model;
}
