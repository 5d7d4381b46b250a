// Shared by both point vertex shaders: view transform, point size, colour, fade and depth cue.
// Points are (x, y[, z]) in data units after projection; ndc = (pos.xy - u_center) * u_scale.
uniform vec2 u_center;          // data-space point at the window centre
uniform vec2 u_scale;           // data units -> NDC, per axis (aspect included)
uniform float u_extent;         // max row norm of the shown data (depth-cue normalisation)
uniform float u_point_size;     // diameter in framebuffer pixels
uniform float u_alpha;          // alpha of normal points
uniform float u_fade_alpha;     // alpha of unselected / filtered-out points
uniform int u_dims;             // 2 or 3
uniform int u_filter_on;        // 1 when a legend filter is active
uniform sampler2D u_palette;    // (K x 2) RGBA32F: row 0 colour, row 1 .r = class passes the filter
uniform int u_image_mode;       // 1: draw thumbnails from the bound atlas
uniform int u_atlas_base;       // first point index stored in the bound atlas
uniform int u_atlas_cols;       // thumbnails per atlas row
uniform float u_image_scale;    // sprite size / point size in image mode

attribute float a_code;         // palette row of the point
attribute float a_state;        // 0 unselected (fade), 1 normal, 2 highlighted (search)

varying vec4 v_color;
varying float v_size;
varying vec2 v_cell;            // atlas cell (col, row) of the point's thumbnail
varying float v_highlight;

void lt_finish(vec3 pos, int index) {
    vec2 ndc = (pos.xy - u_center) * u_scale;
    float depth = 0.0;
    float size = u_point_size;
    float alpha = u_alpha;
    if (u_dims == 3) {
        // z toward the viewer is nearer: bigger and more opaque; far points recede
        depth = clamp(pos.z / max(u_extent, 1e-20), -1.0, 1.0);
        size *= 1.0 + 0.45 * depth;
        alpha *= mix(0.3, 1.0, 0.5 * (depth + 1.0));
    }
    int code = int(a_code + 0.5);
    vec4 c = texelFetch(u_palette, ivec2(code, 0), 0);
    bool passes = u_filter_on == 0 || texelFetch(u_palette, ivec2(code, 1), 0).r > 0.5;
    bool faded = a_state < 0.5 || !passes;
    v_highlight = (a_state > 1.5) ? 1.0 : 0.0;
    if (u_image_mode == 1) {
        size *= u_image_scale;
        int local = index - u_atlas_base;
        v_cell = vec2(float(local % u_atlas_cols), float(local / u_atlas_cols));
    } else {
        v_cell = vec2(0.0);
    }
    if (faded) {
        alpha = u_fade_alpha;
        if (u_image_mode == 1) size /= 2.5 * u_image_scale;
    }
    if (v_highlight > 0.5) { size = max(size * 2.2, 9.0); alpha = 1.0; }
    v_color = vec4(c.rgb, alpha);
    v_size = size;
    gl_PointSize = size;
    gl_Position = vec4(ndc, -0.5 * depth, 1.0);
}
